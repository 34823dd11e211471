process PREPARE {
    tag "$meta.id"
    label 'process_low'

    conda "${moduleDir}/environment.yml"
    container 'ghcr.io/scmaskgan/scmaskgan:0.1.0'

    input:
    tuple val(meta), path(qc_h5ad)

    output:
    tuple val(meta), path("${meta.id}.images.h5"), emit: images
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    scmaskgan-prepare '${qc_h5ad}' --outdir . --sample-id '${meta.id}' ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
    \$(scmaskgan versions | sed -n -E 's/^(scmaskgan|anndata|scanpy|scikit-learn|torch): /    \\1: /p')
    END_VERSIONS
    """

    stub:
    """
    touch ${meta.id}.images.h5

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
    \$(scmaskgan versions | sed -n -E 's/^(scmaskgan|anndata|scanpy|scikit-learn|torch): /    \\1: /p')
    END_VERSIONS
    """
}
