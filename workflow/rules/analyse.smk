from avbias.analyse.contract import FILES as ANALYSIS_FILES


rule analyse:
    input:
        lambda wildcards: run_files(rules.train.output.metrics, [wildcards.dataset]),
    output:
        # Every file the analysis writes, named once by its contract (avbias.analyse.contract): bias, runs, ...
        **{field: f"{RESULTS}/analysis/{{dataset}}/{name}" for field, name in ANALYSIS_FILES.items()},
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
