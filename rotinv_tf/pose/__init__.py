"""Poses: the learned frame (`template_frame`), classical alignment without a network
(`classical`) and refinement after it (`refine`)."""
