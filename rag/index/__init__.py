"""The index directory: snapshots, the manifest, the reader, the writer, verification and recovery.

Nothing here imports the query side, the LLM layer or ingestion; everything above builds on it.
Importing this package is light: FAISS and NumPy load with the modules that need them.
"""
