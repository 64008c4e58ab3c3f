"""Where a run's files live, written once: the train rule's outputs and the DVC train stage's pruning
(avbias.share) both use this pattern. Everything else is named by its rule's output in workflow/rules."""

RUN_DIR = "{results}/runs/{dataset}/{method}/seed{seed}"


def run_dir(results: str, dataset: str = "{dataset}", method: str = "{method}", seed: str = "{seed}") -> str:
    return RUN_DIR.format(results=results, dataset=dataset, method=method, seed=seed)
