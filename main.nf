#!/usr/bin/env nextflow
/*
 * scmaskgan: GAN imputation of scRNA-seq dropouts (scMASKGAN), one sample per task,
 * then cross-sample integration and an HTML report.
 *
 *   nextflow run . -profile test,docker --outdir results
 *   nextflow run . -profile docker,gpu --input samplesheet.csv --outdir results
 */

include { validateParameters; paramsSummaryLog; samplesheetToList } from 'plugin/nf-schema'
include { SCMASKGAN } from './workflows/scmaskgan'

workflow {
    main:
    if (params.validate_params) {
        validateParameters()
    }
    log.info(paramsSummaryLog(workflow))

    // rows: [ meta (id, label_key, batch), counts path ] as declared in assets/schema_input.json
    ch_samples = channel
        .fromList(samplesheetToList(params.input, "${projectDir}/assets/schema_input.json"))
        .map { meta, counts -> withLabels(meta, counts, params.label_key) }

    SCMASKGAN(ch_samples, file(params.input, checkIfExists: true))

    SCMASKGAN.out.versions
        .unique()
        .collectFile(name: 'software_versions.yml', storeDir: "${params.outdir}/pipeline_info", sort: true)
}

/*
 * The QC input of one sample: [ meta, counts, labels ]. A label_key ending like a table
 * (.csv, .tsv, .txt, optionally .gz) is a labels file, relative to the counts file's
 * folder unless absolute, and is staged as `labels`; otherwise it is an obs column name
 * kept in meta.label_key and `labels` is [] (no file).
 */
def withLabels(meta, counts, defaultKey) {
    def key = meta.label_key ?: defaultKey
    def isFile = key && key ==~ /.+\.(csv|tsv|txt)(\.gz)?$/
    def labels = isFile ? file(counts.parent.resolve(key).toString(), checkIfExists: true) : []
    return [meta + [label_key: isFile ? null : key], counts, labels]
}
