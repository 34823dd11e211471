/*
 * Evaluate process settings (value texts of config files) as Nextflow would for one task,
 * for tests/test_nextflow_config.py.
 *
 *   java -cp language-server-all.jar groovy.ui.GroovyMain EvalSettings.groovy REQUEST.json
 *
 * REQUEST: [{"settings": {directive: code}, "params": {...}, "task": {...}, "workflow": {...}}]
 * Prints the evaluated settings of every item as a JSON list. `accelerator` is evaluated
 * first and bound as task.accelerator; a closure is called, as Nextflow does per task.
 */
import groovy.json.JsonOutput
import groovy.json.JsonSlurper

def plain = { v -> v instanceof GString ? v.toString() : v }
def request = new JsonSlurper().parse(new File(args[0]))
def results = request.collect { item ->
    def task = new LinkedHashMap(item.task ?: [:])
    def evaluate = { String code ->
        def value = new GroovyShell(new Binding([params: item.params, task: task, workflow: item.workflow ?: [:]])).evaluate(code)
        plain(value instanceof Closure ? value.call() : value)
    }
    def out = [:]
    if (item.settings.accelerator != null) {
        out.accelerator = evaluate(item.settings.accelerator)
    }
    task.accelerator = out.accelerator
    item.settings.each { k, code -> if (k != 'accelerator') out[k] = evaluate(code) }
    out
}
println JsonOutput.toJson(results)
