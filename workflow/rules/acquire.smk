rule acquire:
    output:
        directory(f"{DATA}/raw/{{dataset}}"),
    params:
        cfg=stage_params("acquire"),
        # Downloads live outside the rule's output, so a failed run keeps them and the next one resumes.
        store=f"{DATA}/sources/{{dataset}}",
    threads: RESOURCES["acquire_threads"]
    # Resources, not params: how patient a download is changes no result, so it triggers no rerun.
    resources:
        download_retries=RESOURCES["download_retries"],
        download_timeout_s=RESOURCES["download_timeout_s"],
    log:
        f"{LOGS}/acquire/{{dataset}}.log",
    conda:
        AVBIAS_ENV
    shell:
        "avbias acquire --params {params.cfg:q} --dataset {wildcards.dataset} --out {output} "
        "--store {params.store} --threads {threads} --retries {resources.download_retries} "
        "--timeout {resources.download_timeout_s} > {log} 2>&1"


rule acquire_all:
    input:
        expand(rules.acquire.output[0], dataset=DATASETS),
