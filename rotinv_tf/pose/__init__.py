"""Pose: the learned frame, classical alignment baselines and refinement."""
