process QC {
    tag "$meta.id"
    label 'process_low'

    conda "${moduleDir}/environment.yml"
    container 'ghcr.io/scmaskgan/scmaskgan:0.1.0'

    input:
    tuple val(meta), path(counts), path(labels)

    output:
    tuple val(meta), path("${meta.id}.qc.h5ad"), emit: h5ad
    tuple val(meta), path("${meta.id}.qc.json"), emit: json
    tuple val(meta), path("${meta.id}.qc.png"), emit: png
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    def label_source = labels ?: meta.label_key
    def label_arg = label_source ? "--label-key '${label_source}'" : ''
    """
    scmaskgan-qc '${counts}' --outdir . --sample-id '${meta.id}' ${label_arg} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
    \$(scmaskgan versions | sed -n -E 's/^(scmaskgan|anndata|scanpy|scikit-learn|torch): /    \\1: /p')
    END_VERSIONS
    """

    stub:
    """
    touch ${meta.id}.qc.h5ad ${meta.id}.qc.json ${meta.id}.qc.png

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
    \$(scmaskgan versions | sed -n -E 's/^(scmaskgan|anndata|scanpy|scikit-learn|torch): /    \\1: /p')
    END_VERSIONS
    """
}
