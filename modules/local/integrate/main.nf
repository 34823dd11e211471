process INTEGRATE {
    tag "all samples"
    label 'process_high'

    conda "${moduleDir}/environment.yml"
    container 'ghcr.io/scmaskgan/scmaskgan:0.1.0'

    input:
    path imputed
    path samplesheet

    output:
    path "integrated.h5ad", emit: h5ad
    path "markers.csv", emit: markers
    path "integration_metrics.csv", emit: metrics
    path "marker_gene_changes.csv", emit: genes
    path "figures", emit: figures
    path "integration_summary.json", emit: summary
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    scmaskgan-integrate ${imputed} --samplesheet '${samplesheet}' --outdir . ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
    \$(scmaskgan versions | sed -n -E 's/^(scmaskgan|anndata|scanpy|scikit-learn|torch): /    \\1: /p')
    END_VERSIONS
    """

    stub:
    """
    touch integrated.h5ad markers.csv integration_metrics.csv marker_gene_changes.csv integration_summary.json
    mkdir -p figures

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
    \$(scmaskgan versions | sed -n -E 's/^(scmaskgan|anndata|scanpy|scikit-learn|torch): /    \\1: /p')
    END_VERSIONS
    """
}
