"""The pre-flight check's six stages, one module each; each takes its `Stage` and returns its record, whose
`figures` are rows of the report (`benchmarks.preflight.report` formats them). Only a stage's own process imports
them (torch, transformers, datasets)."""

from benchmarks.preflight.stages import correctness, environment, hellaswag, muon, recipe, throughput

STAGE_FUNCTIONS = {"environment": environment.run, "correctness": correctness.run, "throughput": throughput.run,
                   "muon": muon.run, "hellaswag": hellaswag.run, "recipe": recipe.run}
