rule train:
    input:
        features=f"{DATA}/features/{{dataset}}",
        # Pretrain-then-fuse methods build on the unimodal runs of the same dataset and seed.
        pretrained=pretrained_models,
    output:
        metrics=f"{run_dir()}/metrics.json",
        curve=f"{run_dir()}/curve.csv",
        outputs=f"{run_dir()}/outputs.npz",
        model=f"{run_dir()}/model.pt",
    params:
        cfg=lambda wildcards: run_params_json(config, wildcards.method),
        out=run_dir(),
    threads: THREADS["train_threads"]
    # Where the data lives and how many workers read it change no result: resources, not params.
    # Local, SLURM and Kubernetes runs read the same numbers; memory grows with each retry.
    resources:
        mem_mb=lambda wildcards, attempt: THREADS["train_mem_mb"] * attempt,
        runtime=THREADS["train_runtime_min"],
        gpu=THREADS["train_gpus"],
        loader_workers=THREADS["train_workers"],
        in_memory=THREADS["train_in_memory"],
    conda:
        ENV
    log:
        f"{LOGS}/train/{{dataset}}/{{method}}/seed{{seed}}.log",
    shell:
        "avbias train --params {params.cfg:q} --dataset {wildcards.dataset} --method {wildcards.method} "
        "--seed {wildcards.seed} --features {input.features} --out {params.out} --threads {threads} "
        "--pretrained {input.pretrained} --workers {resources.loader_workers} --in-memory {resources.in_memory} --gpus {resources.gpu} "
        "> {log} 2>&1"
