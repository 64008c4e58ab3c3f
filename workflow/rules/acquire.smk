rule acquire:
    output:
        directory(f"{DATA}/raw/{{dataset}}"),
    params:
        cfg=stage_params("acquire"),
        # Downloads live outside the rule's output, so a failed run keeps them and the next one resumes.
        store=f"{DATA}/sources/{{dataset}}",
    threads: THREADS["acquire_threads"]
    # Resources, not params: how patient a download is changes no result, so it triggers no rerun.
    resources:
        download_retries=THREADS["download_retries"],
        download_timeout_s=THREADS["download_timeout_s"],
    conda:
        ENV
    log:
        f"{LOGS}/acquire/{{dataset}}.log",
    shell:
        "avbias acquire --params {params.cfg:q} --dataset {wildcards.dataset} --out {output} "
        "--store {params.store} --threads {threads} --retries {resources.download_retries} --timeout {resources.download_timeout_s} "
        "> {log} 2>&1"


rule manifest:
    input:
        f"{DATA}/raw/{{dataset}}",
    output:
        f"{DATA}/manifest/{{dataset}}/clips.parquet",
    params:
        cfg=stage_params("manifest"),
        out=subpath(output[0], parent=True),
    conda:
        ENV
    log:
        f"{LOGS}/manifest/{{dataset}}.log",
    shell:
        "avbias manifest --params {params.cfg:q} --dataset {wildcards.dataset} --raw {input} "
        "--out {params.out} > {log} 2>&1"
