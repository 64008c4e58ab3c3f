rule acquire:
    output:
        directory(f"{DATA}/raw/{{dataset}}"),
    params:
        cfg=stage_params("acquire"),
    threads: THREADS["acquire_threads"]
    conda:
        ENV
    log:
        f"{LOGS}/acquire/{{dataset}}.log",
    shell:
        "avbias acquire --params {params.cfg:q} --dataset {wildcards.dataset} --out {output} "
        "--threads {threads} > {log} 2>&1"


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
