rule analyse:
    input:
        lambda wildcards: expand(rules.train.output.metrics, dataset=wildcards.dataset, method=METHODS, seed=SEEDS),
    output:
        bias=f"{RESULTS}/analysis/{{dataset}}/bias.json",
        runs=f"{RESULTS}/analysis/{{dataset}}/runs.csv",
        summary=f"{RESULTS}/analysis/{{dataset}}/summary.csv",
        per_class=f"{RESULTS}/analysis/{{dataset}}/per_class.csv",
        curves=f"{RESULTS}/analysis/{{dataset}}/curves.csv",
    params:
        cfg=stage_params("analyse"),
        runs=lambda wildcards, input: [subpath(p, parent=True) for p in input],
        out=subpath(output.bias, parent=True),
    log:
        f"{LOGS}/analyse/{{dataset}}.log",
    conda:
        AVBIAS_ENV
    shell:
        "avbias analyse --params {params.cfg:q} --dataset {wildcards.dataset} --runs {params.runs} "
        "--out {params.out} > {log} 2>&1"


rule analyse_all:
    input:
        expand(rules.analyse.output.bias, dataset=DATASETS),
