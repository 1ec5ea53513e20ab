"""Evaluation harness: `python -m evaluation.run` (VBench, VBench-2.0, teacher fidelity, registered suites) into a
resumable results store (`evaluation.store`).  See docs/evaluation.md."""
