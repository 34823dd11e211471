/*
 * The scMASKGAN DAG: per sample QC -> PREPARE -> TRAIN -> GENERATE -> FILTER -> IMPUTE,
 * then INTEGRATE over all imputed samples and one REPORT.
 */

include { QC        } from '../modules/local/qc'
include { PREPARE   } from '../modules/local/prepare'
include { TRAIN     } from '../modules/local/train'
include { GENERATE  } from '../modules/local/generate'
include { FILTER    } from '../modules/local/filter'
include { IMPUTE    } from '../modules/local/impute'
include { INTEGRATE } from '../modules/local/integrate'
include { REPORT    } from '../modules/local/report'

workflow SCMASKGAN {
    take:
    ch_samples   // channel: [ val(meta), path(counts), path(labels) or [] ]
    samplesheet  // path: the samplesheet (batch and metadata columns for INTEGRATE)

    main:
    QC(ch_samples)
    PREPARE(QC.out.h5ad)
    // per-sample joins fail loudly on a missing or repeated sample id instead of dropping it
    TRAIN(PREPARE.out.images)
    GENERATE(TRAIN.out.model.join(PREPARE.out.images, failOnMismatch: true, failOnDuplicate: true))
    FILTER(GENERATE.out.candidates.join(PREPARE.out.images, failOnMismatch: true, failOnDuplicate: true))
    IMPUTE(
        QC.out.h5ad
            .join(PREPARE.out.images, failOnMismatch: true, failOnDuplicate: true)
            .join(FILTER.out.filtered, failOnMismatch: true, failOnDuplicate: true)
    )

    // cross-sample steps; inputs sorted so that -resume finds the same task hash
    ch_imputed = IMPUTE.out.h5ad.map { _meta, h5ad -> h5ad }.collect(sort: true)
    INTEGRATE(ch_imputed, samplesheet)

    // REPORT reads the small files only: summaries, logs, tables and figures
    REPORT(
        QC.out.json.mix(QC.out.png).map { _meta, f -> f }.collect(sort: true),
        TRAIN.out.log.mix(TRAIN.out.png, TRAIN.out.quality).map { _meta, f -> f }.collect(sort: true),
        FILTER.out.json.map { _meta, f -> f }.collect(sort: true),
        IMPUTE.out.json.mix(IMPUTE.out.evaluation).map { _meta, f -> f }.collect(sort: true),
        INTEGRATE.out.markers
            .mix(INTEGRATE.out.metrics, INTEGRATE.out.genes, INTEGRATE.out.figures, INTEGRATE.out.summary)
            .collect(sort: true),
    )

    ch_versions = QC.out.versions.first()
        .mix(
            PREPARE.out.versions.first(), TRAIN.out.versions.first(), GENERATE.out.versions.first(),
            FILTER.out.versions.first(), IMPUTE.out.versions.first(), INTEGRATE.out.versions,
            REPORT.out.versions,
        )

    emit:
    imputed = IMPUTE.out.h5ad        // channel: [ val(meta), path(imputed.h5ad) ]
    integrated = INTEGRATE.out.h5ad  // channel: path(integrated.h5ad)
    report = REPORT.out.html         // channel: path(report.html)
    versions = ch_versions           // channel: path(versions.yml)
}
