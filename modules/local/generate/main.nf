process GENERATE {
    tag "$meta.id"
    label 'process_low'
    label 'process_gpu'

    conda "${moduleDir}/environment.yml"
    container 'ghcr.io/scmaskgan/scmaskgan:0.1.0'

    input:
    tuple val(meta), path(model), path(images)

    output:
    tuple val(meta), path("${meta.id}.candidates.h5"), emit: candidates
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    scmaskgan-generate '${model}' '${images}' --outdir . --sample-id '${meta.id}' ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
    \$(scmaskgan versions | sed -n -E 's/^(scmaskgan|anndata|scanpy|scikit-learn|torch): /    \\1: /p')
    END_VERSIONS
    """

    stub:
    """
    touch ${meta.id}.candidates.h5

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
    \$(scmaskgan versions | sed -n -E 's/^(scmaskgan|anndata|scanpy|scikit-learn|torch): /    \\1: /p')
    END_VERSIONS
    """
}
