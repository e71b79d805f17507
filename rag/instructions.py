"""Standing instructions or questions: what a chat message asks for.

A standing instruction ("answer in one sentence from now on") is about the form of every later
answer and is kept in the system prompt; anything else is a question about the documents.
"""

from __future__ import annotations

import re


# A standing instruction is about the FORM of later answers (length, language, format, tone,
# style, citations, audience, grounding) and names no topic to look up. Anything else is a
# question, and so is anything in doubt: a question wrongly taken for an instruction is stored in
# every later system prompt and never answered, while an instruction taken for a question is only
# answered once. The rules follow that definition, word by word, rather than a list of phrasings.
def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Verbs that open a directive about how to answer ("Answer in French", "Keep it short").
_DIRECTIVES = _words(
    "answer reply respond write use keep be give make speak talk limit format stick stay avoid "
    "include add cite quote put switch stop start end begin try remember mention omit skip leave "
    "structure provide express prefer want like need spell dont never "
    "always no only less more fewer shorter longer simpler"
)
# Words about the form of answers: length, language, format, tone, style, citations, audience.
_FORM = _words(
    # length
    "short shorter shortest brief briefer briefly concise concisely succinct succinctly terse "
    "tersely long longer lengthy length detailed detail depth elaborate thorough thoroughly "
    "verbose compact sentence word paragraph line character token bullet point item limit "
    "maximum max minimum min under over below above within exceed most least single few couple "
    "one two three four five six seven eight nine ten twenty fifty hundred half "
    # language
    "language english french german spanish italian portuguese dutch chinese mandarin japanese "
    "korean russian arabic hindi polish swedish turkish greek hebrew danish norwegian finnish "
    "czech ukrainian vietnamese indonesian british american spelling translate translated "
    # format
    "format formatted formatting markdown json yaml html latex table list bulleted numbered "
    "heading header headline bold italic plain text prose emoji emoticon caps capital uppercase "
    "lowercase structure structured step paragraph newline "
    # tone and style
    "tone style formal formally informal informally casual casually friendly polite politely "
    "professional professionally neutral simple simply clear clearly direct directly "
    "straightforward technical nontechnical non jargon academic conversational humor humour "
    "funny serious warm enthusiastic objective precise precisely exact exactly plainly "
    "terms vocabulary voice passive active person first second third manner way fluff filler "
    "preamble intro introduction greeting apology apologies apologize apologise apologizing "
    "caveat disclaimer hedging hedge repeat restate rephrase emotion opinion opinions "
    # citations and grounding
    "cite citing citation source reference referencing page number quote quotation quoting "
    "passage footnote bracket brackets inline document documents context provided given "
    "excerpt retrieved knowledge outside own guess speculate invent "
    # audience
    "beginner novice expert layman laymen layperson child children kid student audience reader "
    "someone"
)
# Words with no content of their own: they name no topic.
_STOP = _words(
    "a an the of to in into on at by for with from as and or but nor so than then that this "
    "these those its is are was were be been being am do does did doing done not no only just "
    "also too very more less much many fewer each every all any some other such same your you "
    "yours yourself my me i we us our they their he she his her there here what which who when "
    "where why how if whether because while about please now going forward future later "
    "following subsequent rest conversation chat session onward onwards henceforth remaining "
    "next time times again anymore instead rather unless otherwise ever whenever possible can "
    "could would should will shall may might must let lets okay ok thanks thank sure im id ill "
    "ive youre dont doesnt isnt arent wont cant like use using make sure remember kindly even "
    "still though always never without it them everything things anything "
    # What is shaped: neutral, since "Answer the question" says nothing about form.
    "answer reply replies response output question"
)
# Openers that make a message a question by its form ("Do not the encoder layers share ...").
_QUESTION_OPENERS = _words(
    "what why how when where who whom whose which is are was were does did can could would "
    "should will shall may might has have had am isnt arent doesnt didnt"
)
# Phrases that make a message standing ("from now on"), wherever they stand.
_STANDING = re.compile(
    r"\b(from now on|from here on|going forward|in (the )?future|henceforth|onwards?|"
    r"for the rest of|always|never|please|every (time|answer|reply|response)|"
    r"(all|each|every|later|future|following|subsequent|your) (of your )?"
    r"(answers|replies|responses))\b"
)
_LEAD_IN = re.compile(
    r"^((please|kindly|ok(ay)?|also|and|now|just|so|from now on|from here on|going forward|"
    r"in (the )?future|always|remember to|make sure( that)?( you)?( to)?|"
    r"you (should|must|need to|will)|(i|we)( would| d| id)? (want|like|prefer|need)( you)?( to)?|"
    r"id (like|prefer|want)( you)?( to)?|"
    r"for (all|each|every) (later |following |future |subsequent |remaining )?"
    r"(answers?|questions?|replies|reply|responses?)) )+"
)
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _known(word: str, vocabulary: frozenset[str]) -> bool:
    """``word`` or its plural/adverb stem is in ``vocabulary`` ("sentences", "briefly")."""
    if word in vocabulary:
        return True
    stems = [word[:-1]] if word.endswith("s") else []
    stems += [word[:-2]] if word.endswith(("es", "ly")) else []
    return any(len(s) > 2 and s in vocabulary for s in stems)


def is_instruction(message: str) -> bool:
    """Whether ``message`` is a standing instruction about the form of later answers.

    An instruction directs the form of answers (length, language, format, tone, style,
    citations, audience) and names nothing to look up: "Keep answers under two sentences",
    "Answer in French from now on". A message with a topic ("Write a summary of the Llama 2
    paper", "Explain briefly how BLEU works") or in question form is a question, and so is any
    message the rules cannot place: those are answered from the documents.
    """
    text = message.strip().lower().replace("\u2019", "'")
    if not text or text.endswith("?"):
        return False
    tokens = [t.replace("'", "") for t in _TOKEN.findall(text)]
    if not tokens:
        return False
    first, second = tokens[0], tokens[1] if len(tokens) > 1 else ""
    # "Do not use emojis" and "Do answer in English" are directives; "Do the layers ..." asks.
    if first in _QUESTION_OPENERS or (first == "do" and second not in _DIRECTIVES | {"not"}):
        return False
    # Every word must be about form or carry no content; one topic word makes it a question.
    for t in tokens:
        if not (t.isdigit() or _known(t, _FORM) or _known(t, _STOP) or _known(t, _DIRECTIVES)):
            return False
    if not any(_known(t, _FORM) for t in tokens):
        return False
    # A directive: opens with a verb about answering, after lead-ins such as "please" or
    # "from now on", or is marked as standing.
    rest = _LEAD_IN.sub("", " ".join(tokens) + " ").split()
    opener = rest[0] if rest else ""
    if opener == "do" and len(rest) > 1 and rest[1] == "not":
        opener = "dont"
    return opener in _DIRECTIVES or bool(_STANDING.search(" ".join(tokens)))
