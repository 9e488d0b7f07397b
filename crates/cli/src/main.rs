//! `pequod`: the platform engineer's CLI. Renders a CUE module from a local directory with the
//! operator's own engine (the same wasm sandbox, input merge and graph checks), so what it
//! prints is what the operator would apply.
//!
//! - `render <dir>`: the objects as multi-document YAML (`--graph`: the graph nodes).
//! - `vet <dir>`: schema, policy and graph checks only; `ok` or the problems with positions.
//! - `graph <dir>`: the DAG with implicit edges and readiness rules, as DOT or Mermaid.
//! - `diff <dir>`: the rendered objects against a live cluster (server-side apply dry run).
//! - `publish <dir> <registry/repo:version>`: pushes the module rooted at `<dir>` to an OCI
//!   registry in CUE's module artifact format, for `cue` and Pequod's OCI source to fetch.
//!
//! For the first four, `<dir>` is the directory of the CUE package (`cue/webservice`); the
//! module root is the nearest ancestor holding `cue.mod/module.cue`; the modules its `deps`
//! name are fetched from the registries `CUE_REGISTRY` names, as `cue` does. Exit codes: 0 fine, 1
//! errors (schema, evaluation, Error-severity violations, graph problems, cluster errors,
//! module or version checks and registry errors of `publish`), 2 usage, 3 `diff --exit-code`
//! found differences.

mod diff;
mod graph;
mod input;
mod module;
mod publish;
mod render;
mod textdiff;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use pequod_cue::Rendered;

/// Render, check and compare Pequod CUE modules locally; publish them to OCI registries.
#[derive(Debug, Parser)]
#[command(name = "pequod", version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print how long the engine start and the evaluation took, or for publish the zip and
    /// the push (stderr).
    #[arg(long, global = true)]
    timings: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Render the module with an input and print the objects as YAML.
    Render {
        #[command(flatten)]
        module: ModuleArgs,
        /// Print the graph nodes (id, object, dependsOn, readyWhen, applyPolicy) instead of
        /// only the objects.
        #[arg(long)]
        graph: bool,
        /// Print the objects even when an Error-severity policy violation blocks them (the
        /// operator would not apply them); exit 0.
        #[arg(long)]
        ignore_violations: bool,
    },
    /// Check the input against the module's schema, its policy and the graph (ids, objects,
    /// dependencies, cycles) without printing the objects.
    Vet {
        #[command(flatten)]
        module: ModuleArgs,
    },
    /// Draw the dependency graph (explicit dependsOn and implicit Namespace/CRD edges) with
    /// each node's readiness rules.
    Graph {
        #[command(flatten)]
        module: ModuleArgs,
        /// Output format.
        #[arg(long, value_enum, default_value = "dot")]
        format: graph::Format,
    },
    /// Compare the rendered objects with a live cluster (server-side apply dry run, nothing
    /// is written).
    Diff {
        #[command(flatten)]
        module: ModuleArgs,
        /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Kubeconfig context (default: the current context).
        #[arg(long)]
        context: Option<String>,
        /// Exit with 3 when an object would be created or changed.
        #[arg(long)]
        exit_code: bool,
    },
    /// Push a module to an OCI registry in CUE's module format, as `cue mod publish` does.
    ///
    /// The module's files (as cue zips them) go to <registry>/<repository>:<version>, for the
    /// cue command and Pequod's OCI source. The version must be canonical semver (v1.2.3)
    /// matching the module path's major version (@vN; none means v0). cue looks a module up at
    /// <registry>/<prefix>/<module path without @vN>, so push there.
    Publish {
        /// The module's root directory (holds cue.mod/module.cue).
        dir: PathBuf,
        /// Where to push: <registry>/<repository>:<version>, like
        /// 127.0.0.1:5000/example.com/platform:v0.1.0.
        reference: String,
        /// Plain HTTP (default for localhost, 127.0.0.1 and [::1]).
        #[arg(long)]
        insecure: bool,
        /// Registry user (basic auth), with --password.
        #[arg(long, env = "PEQUOD_REGISTRY_USERNAME")]
        username: Option<String>,
        /// Registry password or token, with --username.
        #[arg(long, env = "PEQUOD_REGISTRY_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
}

/// Which module and which input.
#[derive(Debug, Args)]
struct ModuleArgs {
    /// Directory of the CUE package to render (the module root is the nearest ancestor with
    /// cue.mod/module.cue).
    dir: PathBuf,
    /// Input as YAML or JSON; `-` reads stdin. Without it the input is empty.
    #[arg(short, long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// The Transform's name: sets the input's metadata.name (default: the input's own).
    #[arg(long)]
    name: Option<String>,
    /// The Transform's namespace: sets the input's metadata.namespace (default: the input's
    /// own).
    #[arg(short, long)]
    namespace: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command, cli.timings) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing stdout"),
        _ => Ok(()),
    }
}

/// A module evaluated with its merged input.
struct Evaluated {
    module: module::LocalModule,
    name: String,
    namespace: String,
    rendered: Arc<Rendered>,
}

/// Loads, merges and evaluates; `Ok(None)` when the evaluation failed (errors printed).
fn evaluate(args: &ModuleArgs, timings: bool) -> anyhow::Result<Option<Evaluated>> {
    let mut module = module::load(&args.dir)?;
    module::fetch_dependencies(&mut module)?;
    let raw = input::read(args.input.as_deref())?;
    let input = input::with_metadata(raw, args.name.as_deref(), args.namespace.as_deref());
    let (name, namespace) = input::identity(&input);
    let (result, spent) = render::evaluate(&module, &input)?;
    if timings {
        eprintln!("{spent}");
    }
    match result {
        Ok(rendered) => {
            for violation in &rendered.violations {
                eprintln!("{}", render::violation_line(&module, violation));
            }
            Ok(Some(Evaluated {
                module,
                name,
                namespace,
                rendered,
            }))
        }
        Err(e) => {
            for line in render::error_lines(&module, &e) {
                eprintln!("{line}");
            }
            Ok(None)
        }
    }
}

fn run(command: Command, timings: bool) -> anyhow::Result<ExitCode> {
    match command {
        Command::Render {
            module,
            graph,
            ignore_violations,
        } => render_command(&module, graph, ignore_violations, timings),
        Command::Vet { module } => vet_command(&module, timings),
        Command::Graph { module, format } => graph_command(&module, format, timings),
        Command::Diff {
            module,
            kubeconfig,
            context,
            exit_code,
        } => diff_command(
            &module,
            &diff::Target {
                kubeconfig,
                context,
            },
            exit_code,
            timings,
        ),
        Command::Publish {
            dir,
            reference,
            insecure,
            username,
            password,
        } => {
            let options = publish::Options {
                dir,
                reference,
                insecure,
                username,
                password,
            };
            print(&publish::run(&options, timings)?)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn render_command(
    args: &ModuleArgs,
    graph: bool,
    ignore_violations: bool,
    timings: bool,
) -> anyhow::Result<ExitCode> {
    let Some(done) = evaluate(args, timings)? else {
        return Ok(ExitCode::FAILURE);
    };
    if let Some(outputs) = &done.rendered.outputs {
        eprint!("{}", render::outputs_yaml(outputs)?);
    }
    let blocked = render::blocking(&done.rendered.violations);
    if blocked && !ignore_violations {
        eprintln!(
            "error: Error-severity violations block this render (the operator would not apply it); --ignore-violations prints it anyway"
        );
        return Ok(ExitCode::FAILURE);
    }
    let text = if graph {
        render::graph_yaml(&done.rendered.nodes)?
    } else {
        render::objects_yaml(&done.rendered.nodes)?
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn vet_command(args: &ModuleArgs, timings: bool) -> anyhow::Result<ExitCode> {
    let Some(done) = evaluate(args, timings)? else {
        return Ok(ExitCode::FAILURE);
    };
    let mut failed = render::blocking(&done.rendered.violations);
    if let Err(e) = graph::dag(&done.rendered.nodes, &done.namespace) {
        eprintln!("graph: {e}");
        failed = true;
    }
    if failed {
        return Ok(ExitCode::FAILURE);
    }
    print(&format!(
        "ok: {} ({} nodes)\n",
        done.module.display_file(&done.module.source.package),
        done.rendered.nodes.len()
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn graph_command(
    args: &ModuleArgs,
    format: graph::Format,
    timings: bool,
) -> anyhow::Result<ExitCode> {
    let Some(done) = evaluate(args, timings)? else {
        return Ok(ExitCode::FAILURE);
    };
    let nodes = &done.rendered.nodes;
    let dag = match graph::dag(nodes, &done.namespace) {
        Ok(dag) => dag,
        Err(e) => {
            eprintln!("graph: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let text = match format {
        graph::Format::Dot => graph::dot(&done.name, &dag, nodes),
        graph::Format::Mermaid => graph::mermaid(&dag, nodes),
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn diff_command(
    args: &ModuleArgs,
    target: &diff::Target,
    exit_code: bool,
    timings: bool,
) -> anyhow::Result<ExitCode> {
    let Some(done) = evaluate(args, timings)? else {
        return Ok(ExitCode::FAILURE);
    };
    if done.name.is_empty() || done.namespace.is_empty() {
        anyhow::bail!(
            "diff needs the Transform's name and namespace: --name and --namespace (or metadata in the input)"
        );
    }
    if let Err(e) = graph::dag(&done.rendered.nodes, &done.namespace) {
        eprintln!("graph: {e}");
        return Ok(ExitCode::FAILURE);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut report = String::new();
    let summary = runtime.block_on(diff::run(
        target,
        &done.rendered.nodes,
        &done.name,
        &done.namespace,
        &mut report,
    ))?;
    print(&report)?;
    eprintln!("{}", diff::summary_line(&summary));
    if summary.failed > 0 {
        return Ok(ExitCode::FAILURE);
    }
    if exit_code && summary.new + summary.changed > 0 {
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}
