rule report:
    input:
        bias=expand(rules.analyse.output.bias, dataset=DATASETS),
        # The data section: what was acquired (raw/acquire.json) and what could be decoded (extract.json).
        raw=expand(rules.acquire.output[0], dataset=DATASETS),
        features=expand(rules.extract.output[0], dataset=DATASETS),
    output:
        html=report(f"{RESULTS}/report/report.html", caption="../report/report.rst", category="Report"),
        figures=report(
            directory(f"{RESULTS}/report/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
        summary=report(f"{RESULTS}/summary.md", caption="../report/summary.rst", category="Tables"),
        metrics=f"{RESULTS}/metrics.json",
    params:
        cfg=stage_params("report"),
        analysis=lambda wildcards, input: [subpath(p, parent=True) for p in input.bias],
        out=subpath(output.html, parent=True),
    log:
        f"{LOGS}/report.log",
    conda:
        AVBIAS_ENV
    shell:
        "avbias report --params {params.cfg:q} --analysis {params.analysis} --raw {input.raw} "
        "--features {input.features} --out {params.out} "
        "--summary {output.summary} --metrics {output.metrics} > {log} 2>&1"
