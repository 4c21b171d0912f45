"""In-plane poses without the network (`classical`) and after it (`refine`)."""
