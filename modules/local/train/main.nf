process TRAIN {
    tag "$meta.id"
    label 'process_medium'
    label 'process_gpu'

    conda "${moduleDir}/environment.yml"
    container 'ghcr.io/scmaskgan/scmaskgan:0.1.0'

    input:
    tuple val(meta), path(images)

    output:
    tuple val(meta), path("${meta.id}.model.pt"), emit: model
    tuple val(meta), path("${meta.id}.train_log.csv"), emit: log
    tuple val(meta), path("${meta.id}.train_loss.png"), emit: png
    tuple val(meta), path("${meta.id}.train_quality.csv"), emit: quality
    path "versions.yml", emit: versions

    // The checkpoints are written outside the task folder, in the work folder when the task
    // can reach it (a file system: local, SLURM), keyed on the options and the images, so a
    // retried (time-out, out of memory) or -resume'd TRAIN continues from the last one and
    // other settings never load it. The outputs are copied in and the folder removed at the end.
    script:
    def args = task.ext.args ?: ''
    def store = workflow.workDir.scheme == 'file' ? "${workflow.workDir}/scmaskgan-checkpoints/${meta.id}" : ''
    """
    outdir=.
    if [ -n '${store}' ]; then
        outdir='${store}'/${args.md5().substring(0, 8)}-\$(md5sum < '${images}' | cut -c1-16)
        mkdir -p "\$outdir"
    fi
    scmaskgan-train '${images}' --outdir "\$outdir" --sample-id '${meta.id}' --threads ${task.cpus} ${args} --resume
    if [ "\$outdir" != . ]; then
        cp "\$outdir"/'${meta.id}'.{model.pt,train_log.csv,train_loss.png,train_quality.csv} .
        rm -rf "\$outdir"
    fi

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
    \$(scmaskgan versions | sed -n -E 's/^(scmaskgan|anndata|scanpy|scikit-learn|torch): /    \\1: /p')
    END_VERSIONS
    """

    stub:
    """
    touch ${meta.id}.model.pt ${meta.id}.train_log.csv ${meta.id}.train_loss.png ${meta.id}.train_quality.csv

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
    \$(scmaskgan versions | sed -n -E 's/^(scmaskgan|anndata|scanpy|scikit-learn|torch): /    \\1: /p')
    END_VERSIONS
    """
}
