/*
 * Render module command lines the way Nextflow would, for tests/test_nextflow_contract.py.
 *
 *   java -cp language-server-all.jar groovy.ui.GroovyMain RenderScripts.groovy REQUEST.json
 *
 * REQUEST: {"defaults": {flat params}, "profile_config": "conf/test.config",
 *           "project_dir": "...", "work_dir": "...", "ext_args": {process: "[...].findAll().join(' ')"},
 *           "tasks": [{"process", "script", "outputs": [gstring...], "inputs": {...}, "meta": {...}}]}
 * Prints {"params": {merged}, "tasks": [{"process", "command", "outputs": [names]}]} as JSON.
 *
 * The params are the defaults overlaid with the profile's params block (read with
 * ConfigSlurper); ext.args closures and script blocks are evaluated as Groovy with
 * `params`, `task` (ext.args, cpus, process), `meta` and the inputs bound, and the
 * script is indent-stripped as Nextflow does; `workflow.workDir` is the work_dir path.
 */
import groovy.json.JsonOutput
import groovy.json.JsonSlurper
import java.nio.file.Path
import java.nio.file.Paths

/**
 * A multi-file `path` input, as Nextflow's own BlankSeparatedList: list methods, but not a
 * List (which a GString would render as [a, b]), so it interpolates as "a b".
 */
class BlankSeparatedList {
    @Delegate(interfaces = false) List target
    BlankSeparatedList(Collection c) { target = new ArrayList(c) }
    String toString() { target.join(' ') }
}

// Nextflow's Path extension used by the modules
Path.metaClass.getScheme = { -> delegate.toUri().scheme }

def request = new JsonSlurper().parse(new File(args[0]))

def slurper = new ConfigSlurper()
slurper.setBinding([projectDir: request.project_dir])
def profile = slurper.parse(new File(request.profile_config).toURI().toURL())
def params = new LinkedHashMap(request.defaults)
profile.params.each { k, v -> params[k] = v instanceof GString ? v.toString() : v }

def evaluate = { String code, Map vars ->
    new GroovyShell(new Binding(vars)).evaluate(code)
}

def rendered = request.tasks.collect { t ->
    def inputs = t.inputs.collectEntries { k, v -> [k, v instanceof List && v ? new BlankSeparatedList(v) : v] }
    def extArgs = evaluate(request.ext_args[t.process] ?: "''", [params: params])
    def task = [ext: [args: extArgs], cpus: 1, process: t.process]
    def vars = [params: params, task: task, meta: t.meta, workflow: [workDir: Paths.get(request.work_dir)]] + inputs
    [
        process: t.process,
        command: evaluate(t.script, vars).toString().stripIndent().trim() + '\n',
        outputs: t.outputs.collect { evaluate(it, vars).toString() },
    ]
}
println JsonOutput.toJson([params: params, tasks: rendered])
