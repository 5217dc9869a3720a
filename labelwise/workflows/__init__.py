"""Workflows: the file-to-file pipelines of the methods, one function per job.

The layers of a method (see ``docs/architecture.md``):

* **core** (``labelwise.plugins.<method>``): the math, plain-torch criteria and dataset
  wrappers; no files, no framework;
* **workflow** (this package): a job from input files to output files: ReLabel a split,
  embed a dataset and fit / score CleanNet, check a CFT head's ONNX export. Framework code is
  reached through the adapters (``labelwise.adapters``);
* **plugin** (``labelwise.plugins.<method>.cli`` and the hook implementations): argparse,
  registration and printing only.

The CLI, the demo and the benchmarks call these functions; none of them composes the
pipeline again. Importing this package imports no torch or framework.
"""
