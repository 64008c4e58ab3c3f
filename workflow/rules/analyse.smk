rule analyse:
    input:
        dataset_runs,
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
    conda:
        ENV
    log:
        f"{LOGS}/analyse/{{dataset}}.log",
    shell:
        "avbias analyse --params {params.cfg:q} --dataset {wildcards.dataset} --runs {params.runs} "
        "--out {params.out} > {log} 2>&1"


rule report:
    input:
        bias=expand(f"{RESULTS}/analysis/{{dataset}}/bias.json", dataset=DATASETS),
        # The data section: what was acquired (raw/acquire.json) and what could be decoded (extract.json).
        raw=expand(f"{DATA}/raw/{{dataset}}", dataset=DATASETS),
        features=expand(f"{DATA}/features/{{dataset}}", dataset=DATASETS),
    output:
        html=f"{RESULTS}/report/report.html",
        figures=directory(f"{RESULTS}/report/figures"),
        summary=f"{RESULTS}/summary.md",
        metrics=f"{RESULTS}/metrics.json",
    params:
        cfg=stage_params("report"),
        analysis=lambda wildcards, input: [subpath(p, parent=True) for p in input.bias],
        out=subpath(output.html, parent=True),
    conda:
        ENV
    log:
        f"{LOGS}/report.log",
    shell:
        "avbias report --params {params.cfg:q} --analysis {params.analysis} --raw {input.raw} "
        "--features {input.features} --out {params.out} "
        "--summary {output.summary} --metrics {output.metrics} > {log} 2>&1"
