process REPORT {
    tag "all samples"
    label 'process_single'

    conda "${moduleDir}/environment.yml"
    container 'ghcr.io/scmaskgan/scmaskgan:0.1.0'

    // the small files the report shows (summaries, logs, tables, figures; never the h5/h5ad
    // data), staged in the layout of --outdir
    input:
    path qc, stageAs: 'results/qc/*'
    path train, stageAs: 'results/train/*'
    path filtered, stageAs: 'results/filter/*'
    path impute, stageAs: 'results/impute/*'
    path integrate, stageAs: 'results/integrate/*'

    output:
    path "report.html", emit: html
    path "versions.yml", emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    scmaskgan-report results --outdir . ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
    \$(scmaskgan versions | sed -n -E 's/^(scmaskgan|anndata|scanpy|scikit-learn|torch): /    \\1: /p')
    END_VERSIONS
    """

    stub:
    """
    touch report.html

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
    \$(scmaskgan versions | sed -n -E 's/^(scmaskgan|anndata|scanpy|scikit-learn|torch): /    \\1: /p')
    END_VERSIONS
    """
}
