/*
 * Run main.nf's helper functions (resolvedSamplesheet, withLabels) outside Nextflow, for
 * tests/test_schema_agreement.py and tests/test_nextflow_main.py.
 *
 *   java -cp language-server-all.jar groovy.ui.GroovyMain ResolveSamplesheets.groovy MAIN_NF WORK_DIR CLOUD_ROOT EXPR...
 *
 * Every top-level `def` of MAIN_NF is loaded, then each EXPR (e.g. "resolvedSamplesheet('s.csv')")
 * is evaluated and printed on one line: a path as its URI string, a list tab-separated.
 * The few Nextflow builtins the functions use are provided here: file(), workflow.workDir,
 * Nextflow's Path extensions (name, readLines, text, mkdirs, exists, toUriString) and
 * cloud paths: `s3://` and `gs://` URIs are CloudPath objects stored under CLOUD_ROOT,
 * whose toString() drops the scheme as Nextflow's S3 and GCS paths do (/bucket/key).
 */
import java.nio.file.FileSystems
import java.nio.file.Files
import java.nio.file.Path
import java.nio.file.Paths

Path.metaClass.getName = { -> delegate.fileName.toString() }
Path.metaClass.readLines = { -> Files.readAllLines(delegate) }
Path.metaClass.setText = { String text -> Files.writeString(delegate, text) }
Path.metaClass.mkdirs = { -> Files.createDirectories(delegate) }
Path.metaClass.exists = { -> Files.exists(delegate) }
Path.metaClass.toUriString = { -> delegate.fileSystem == FileSystems.default ? delegate.toString() : delegate.toUri().toString() }

/** An object-storage path (`scheme://bucket/key`), kept as files under a local folder. */
class CloudPath {
    final String scheme
    final String key
    final Path root

    CloudPath(String scheme, String key, Path root) {
        this.scheme = scheme
        this.key = Paths.get('/', key).normalize().toString().substring(1)
        this.root = root
    }

    static CloudPath parse(String uri, Path root) {
        def m = uri =~ /^(s3|gs):\/\/(.+)$/
        m.matches() ? new CloudPath(m.group(1), m.group(2), root) : null
    }

    CloudPath getParent() { new CloudPath(scheme, key.contains('/') ? key.substring(0, key.lastIndexOf('/')) : '', root) }
    CloudPath resolve(String other) { parse(other, root) ?: new CloudPath(scheme, "${key}/${other}", root) }
    String getName() { key.tokenize('/')[-1] }
    Path getBacking() { root.resolve(scheme).resolve(key) }
    List<String> readLines() { Files.readAllLines(backing) }
    boolean exists() { Files.exists(backing) }
    String toUriString() { "${scheme}://${key}" }
    String toString() { "/${key}" }
}

def source = new File(args[0]).text
def functions = (source =~ /(?ms)^def \w+\(.*?^}\n/).collect { it }.join('\n')
def workDir = Paths.get(args[1]).toAbsolutePath()
def cloudRoot = Paths.get(args[2]).toAbsolutePath()

def file = { Object... a ->
    def opts = a[0] instanceof Map ? a[0] : [:]
    def name = (a[0] instanceof Map ? a[1] : a[0]).toString()
    def path = CloudPath.parse(name, cloudRoot) ?: Paths.get(name).toAbsolutePath()
    if (opts.checkIfExists && !path.exists()) {
        throw new FileNotFoundException(name)
    }
    path
}
def render = { value ->
    def one = { v -> v instanceof Path || v instanceof CloudPath ? v.toUriString() : v.toString() }
    value instanceof List ? value.collect(one).join('\t') : one(value)
}
args.drop(3).each { expr ->
    def binding = new Binding([file: file, workflow: [workDir: workDir]])
    println render(new GroovyShell(binding).evaluate(functions + '\n' + expr))
}
