rule train:
    input:
        features=rules.extract.output[0],
        # Pretrain-then-fuse methods build on the unimodal runs of the same dataset and seed.
        pretrained=pretrained_models,
    output:
        metrics=f"{run_dir(RESULTS)}/metrics.json",
        curve=f"{run_dir(RESULTS)}/curve.csv",
        outputs=f"{run_dir(RESULTS)}/outputs.npz",
        model=f"{run_dir(RESULTS)}/model.pt",
    params:
        cfg=lambda wildcards: run_params_json(config, wildcards.method, wildcards.dataset),
        out=subpath(output.metrics, parent=True),
    threads: RESOURCES["train_threads"]
    # Where the data lives and how many workers read it change no result: resources, not params.
    # Local, SLURM and Kubernetes runs read the same numbers; memory grows with each retry.
    resources:
        mem_mb=lambda wildcards, attempt: RESOURCES["train_mem_mb"] * attempt,
        runtime=RESOURCES["train_runtime_min"],
        # gpu: per job, as before; locally --resources gpu=<GPUs x train_gpu_slots> lets several jobs share a GPU.
        gpu=RESOURCES["train_gpus"],
        gpu_slots=RESOURCES["train_gpu_slots"],
        loader_workers=RESOURCES["train_workers"],
        in_memory=RESOURCES["train_in_memory"],
    log:
        f"{LOGS}/train/{{dataset}}/{{method}}/seed{{seed}}.log",
    conda:
        AVBIAS_ENV
    shell:
        "avbias train --params {params.cfg:q} --dataset {wildcards.dataset} --method {wildcards.method} "
        "--seed {wildcards.seed} --features {input.features} --out {params.out} --threads {threads} "
        "--pretrained {input.pretrained} --workers {resources.loader_workers} "
        "--in-memory {resources.in_memory} --gpus {resources.gpu} --gpu-slots {resources.gpu_slots} > {log} 2>&1"


rule train_all:
    input:
        run_files(rules.train.output.metrics, DATASETS),
