rule train:
    input:
        f"{DATA}/features/{{dataset}}",
    output:
        metrics=f"{run_dir()}/metrics.json",
        curve=f"{run_dir()}/curve.csv",
        outputs=f"{run_dir()}/outputs.npz",
        model=f"{run_dir()}/model.pt",
    params:
        cfg=stage_params("train"),
        out=run_dir(),
    threads: THREADS["train_threads"]
    conda:
        ENV
    log:
        f"{LOGS}/train/{{dataset}}/{{method}}/seed{{seed}}.log",
    shell:
        "avbias train --params {params.cfg:q} --dataset {wildcards.dataset} --method {wildcards.method} "
        "--seed {wildcards.seed} --features {input} --out {params.out} --threads {threads} > {log} 2>&1"
