/*
 * Strict-syntax lint of Nextflow scripts and configs with the Nextflow language
 * server's own compiler (the one behind the editor extensions), without an editor.
 *
 *   java -cp language-server-all.jar groovy.ui.GroovyMain NfLint.groovy ROOT FILE...
 *
 * Every .nf file is compiled together (includes resolved, names checked), every
 * .config file on its own; nf-test files (*.nf.test, nf-test.config), which are
 * Groovy, are parsed as Groovy (syntax only). Prints `path:line:col: error|warning: message` per
 * diagnostic and a summary line; exits 1 on any error.
 */
import nextflow.lsp.ast.ASTNodeCache
import nextflow.lsp.file.FileCache
import nextflow.lsp.services.ErrorReportingMode
import nextflow.lsp.services.LanguageServerConfiguration
import nextflow.lsp.services.config.ConfigAstCache
import nextflow.lsp.services.script.ScriptAstCache
import nextflow.lsp.spec.PluginSpecCache

// Config scopes of plugins: their specs come from the plugin registry, which is not
// reachable offline, so "Unrecognized config option" warnings about them are dropped.
def pluginScopes = ['validation']

def root = new File(args[0]).canonicalFile
def files = args.drop(1).collect { new File(it).canonicalFile }

// The strictest reporting (PARANOID: also future deprecations); type checking for the
// scripts only: on configs it flags every dynamic directive (a closure) as a wrong type.
def settings = { boolean typeChecking ->
    new LanguageServerConfiguration(
        'TB', false, ErrorReportingMode.PARANOID, [], false, false, false, 100,
        'https://registry.nextflow.io/api/', false, typeChecking)
}
def plugins = new PluginSpecCache(settings(false).pluginRegistryUrl())
def scripts = new ScriptAstCache(root.toURI().toString())
scripts.initialize(settings(true), plugins)
def configs = new ConfigAstCache()
configs.initialize(settings(false), plugins)

def relevant = { String message ->
    !pluginScopes.any { message.startsWith("Unrecognized config option '${it}.") }
}

def lint = { ASTNodeCache cache, List<File> group ->
    def fileCache = new FileCache()
    def uris = group.collect { f ->
        def uri = f.toURI()
        fileCache.setContents(uri, f.text)
        fileCache.markChanged(uri)
        uri
    } as Set
    def stderr = System.err  // the failed registry look-up prints a stack trace
    System.err = new PrintStream(OutputStream.nullOutputStream())
    try {
        cache.update(uris, fileCache)
    } finally {
        System.err = stderr
    }
    def counts = [errors: 0, warnings: 0]
    for (f in group) {
        def rel = root.toPath().relativize(f.toPath())
        for (e in cache.getErrors(f.toURI()) ?: []) {
            println "${rel}:${e.line}:${e.startColumn}: error: ${e.originalMessage}"
            counts.errors++
        }
        for (w in cache.getWarnings(f.toURI()) ?: []) {
            if (!relevant(w.message)) continue
            println "${rel}:${w.context?.startLine ?: 0}:${w.context?.startColumn ?: 0}: warning: ${w.message}"
            counts.warnings++
        }
    }
    counts
}

def groovySyntax = { List<File> group ->
    def counts = [errors: 0, warnings: 0]
    for (f in group) {
        try {
            new GroovyShell().parse(f.text, f.name.replaceAll(/\W/, '_'))
        } catch (org.codehaus.groovy.control.MultipleCompilationErrorsException e) {
            for (m in e.errorCollector.errors) {
                def cause = m.cause
                println "${root.toPath().relativize(f.toPath())}:${cause?.line ?: 0}:${cause?.startColumn ?: 0}: error: ${cause?.originalMessage ?: m}"
                counts.errors++
            }
        }
    }
    counts
}

def isNfTest = { File f -> f.name.endsWith('.nf.test') || f.name == 'nf-test.config' }
def s = lint(scripts, files.findAll { it.name.endsWith('.nf') })
def c = lint(configs, files.findAll { it.name.endsWith('.config') && !isNfTest(it) })
def t = groovySyntax(files.findAll(isNfTest))
int errors = s.errors + c.errors + t.errors
println "nf-lint: ${files.size()} files, ${errors} error(s), ${s.warnings + c.warnings} warning(s)"
System.exit(errors > 0 ? 1 : 0)
