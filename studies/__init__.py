"""The studies around the method (the package `pds`): the budget sweep, the mismatched-pair sweep, the
calibration of a world, the real-architecture dry run, and the tools that compare metrics and build the book.
Each study is a DVC pipeline (studies/<name>/dvc.yaml); pds knows nothing of this package."""
