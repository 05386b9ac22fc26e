"""One module per DVC stage: stage `x_y` (dvc.yaml, pipelines/*/dvc.yaml) runs the command
`selfreward x-y`, whose entry is `run_x_y` in stages/x_y.py.

The contract of an entry function:
- keyword-only arguments: `params` (the loaded `Params`, when the stage reads any), the input
  paths, the output paths; it returns its metrics (or what its command prints);
- a pure function over files: inputs in, outputs out, each written atomically, stale ones removed
  before it starts and none left when it fails (resumable shards excepted), through
  `core.outputs.stage_outputs`;
- the click command in cli.py only parses options and calls it; the logic shared by several
  stages lives in the packages below (data, generation, judge, training, evaluation, report), so
  stage modules never import each other.

Commands that are not DVC stages (tools a person runs by hand) have no module here: their entry
is a function of the package that owns their concern, called by cli.py (`eval-judge`:
judge.agreement.evaluate_judge; `ifeval-data`: evaluation.ifeval.download_official;
`alpaca-data`: evaluation.alpaca.download_alpaca_data).

tests/test_stage_contract.py checks the naming rule and that stages never import each other.
"""
