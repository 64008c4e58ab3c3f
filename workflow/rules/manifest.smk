rule manifest:
    input:
        rules.acquire.output[0],
    output:
        f"{DATA}/manifest/{{dataset}}/clips.parquet",
    params:
        cfg=stage_params("manifest"),
        out=subpath(output[0], parent=True),
    log:
        f"{LOGS}/manifest/{{dataset}}.log",
    conda:
        AVBIAS_ENV
    shell:
        "avbias manifest --params {params.cfg:q} --dataset {wildcards.dataset} --raw {input} "
        "--out {params.out} > {log} 2>&1"


rule manifest_all:
    input:
        expand(rules.manifest.output[0], dataset=DATASETS),
