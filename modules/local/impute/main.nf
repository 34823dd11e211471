process IMPUTE {
    tag "$meta.id"
    label 'process_medium'

    conda "${moduleDir}/environment.yml"
    container 'ghcr.io/scmaskgan/scmaskgan:0.1.0'

    input:
    tuple val(meta), path(qc_h5ad), path(images), path(filtered)

    output:
    tuple val(meta), path("${meta.id}.imputed.h5ad"), emit: h5ad
    tuple val(meta), path("${meta.id}.impute.json"), emit: json
    tuple val(meta), path("${meta.id}.evaluation"), emit: evaluation
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    scmaskgan-impute '${qc_h5ad}' '${images}' '${filtered}' --outdir . --sample-id '${meta.id}' ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
    \$(scmaskgan versions | sed -n -E 's/^(scmaskgan|anndata|scanpy|scikit-learn|torch): /    \\1: /p')
    END_VERSIONS
    """

    stub:
    """
    touch ${meta.id}.imputed.h5ad ${meta.id}.impute.json
    mkdir -p ${meta.id}.evaluation

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
    \$(scmaskgan versions | sed -n -E 's/^(scmaskgan|anndata|scanpy|scikit-learn|torch): /    \\1: /p')
    END_VERSIONS
    """
}
