"""File formats the data arrives in: MRC particle stacks, RELION STAR tables, MNIST's IDX files and
the spatial-VAE 5HDB archive layout. Every reader raises `DataError` on bad input."""
