"""Training side: datasets (UTKFace, IMDB-WIKI), face-crop cache, model definitions,
training, evaluation and the ``agegender train|evaluate|prepare`` commands."""
