/*
 * Run main.nf's resolvedSamplesheet() outside Nextflow, for tests/test_schema_agreement.py.
 *
 *   java -cp language-server-all.jar groovy.ui.GroovyMain ResolveSamplesheets.groovy MAIN_NF WORK_DIR SHEET...
 *
 * Prints, per samplesheet, the path of the resolved copy that main.nf hands to nf-schema.
 * The few Nextflow builtins the function uses are provided here: file() and
 * workflow.workDir, and Nextflow's Path extensions name, readLines, text and mkdirs.
 */
import java.nio.file.Files
import java.nio.file.Path
import java.nio.file.Paths

Path.metaClass.getName = { -> delegate.fileName.toString() }
Path.metaClass.readLines = { -> Files.readAllLines(delegate) }
Path.metaClass.setText = { String text -> Files.writeString(delegate, text) }
Path.metaClass.mkdirs = { -> Files.createDirectories(delegate) }

def source = new File(args[0]).text
def start = source.indexOf('def resolvedSamplesheet(')
def function = source.substring(start, source.indexOf('\n}\n', start) + 3)

def file = { Object... a ->
    def opts = a[0] instanceof Map ? a[0] : [:]
    def path = Paths.get((a[0] instanceof Map ? a[1] : a[0]).toString()).toAbsolutePath()
    if (opts.checkIfExists && !Files.exists(path)) {
        throw new FileNotFoundException(path.toString())
    }
    path
}
def workDir = Paths.get(args[1]).toAbsolutePath()
args.drop(2).eachWithIndex { sheet, i ->
    def binding = new Binding([file: file, workflow: [workDir: workDir.resolve("run${i}")]])
    println new GroovyShell(binding).evaluate(function + "\nresolvedSamplesheet('${sheet}')")
}
