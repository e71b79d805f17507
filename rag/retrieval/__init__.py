"""Finding passages: the embedder, dense / lexical / hybrid retrieval, fusion, MMR and reranking."""
