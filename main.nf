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
    samplesheet = resolvedSamplesheet(params.input)
    ch_samples = channel
        .fromList(samplesheetToList(samplesheet, "${projectDir}/assets/schema_input.json"))
        .map { meta, counts -> withLabels(meta, counts, params.label_key) }

    SCMASKGAN(ch_samples, samplesheet)

    SCMASKGAN.out.versions
        .unique()
        .collectFile(name: 'software_versions.yml', storeDir: "${params.outdir}/pipeline_info", sort: true)
}

/*
 * The samplesheet with every relative `path` resolved against the samplesheet's own folder
 * (the rule of `scmaskgan run`), so that nf-schema checks and stages the same files
 * whatever folder Nextflow was launched from. Absolute paths and URLs are kept, and so are
 * lines holding quotes (nf-schema then resolves them itself). Resolved paths keep their
 * scheme (toUriString: s3://bucket/key, not /bucket/key). The copy is content-addressed
 * in the work folder and written only when new, so -resume sees the same file (same path,
 * same timestamp) and reuses INTEGRATE.
 */
def resolvedSamplesheet(input) {
    def sheet = file(input, checkIfExists: true)
    def sep = sheet.name.endsWith('.tsv') ? '\t' : ','
    def lines = sheet.readLines()
    def column = lines ? lines[0].split(sep, -1).toList().indexOf('path') : -1
    if (column < 0) {
        return sheet
    }
    def resolved = lines.indexed().collect { i, line ->
        def fields = line.split(sep, -1).toList()
        def value = fields.size() > column ? fields[column] : ''
        if (i == 0 || line.contains('"') || !value || value.startsWith('/') || value ==~ /^[a-z0-9]+:\/\/.*/) {
            return line
        }
        fields[column] = sheet.parent.resolve(value).toUriString()
        return fields.join(sep)
    }
    def text = resolved.join('\n') + '\n'
    def copy = workflow.workDir.resolve("scmaskgan-input/${text.md5()}/${sheet.name}")
    if (!copy.exists()) {
        copy.parent.mkdirs()
        copy.text = text
    }
    return copy
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
    def labels = isFile ? file(counts.parent.resolve(key).toUriString(), checkIfExists: true) : []
    return [meta + [label_key: isFile ? null : key], counts, labels]
}
