//! `keyward completions SHELL` and `keyward man`: generated from the clap
//! definition, they name every command the binary accepts. The list of
//! commands comes from `keyward --help` (what the parser knows), not from
//! this file, so a new command is checked without editing the test.

mod common;

use common::Kw;

/// The subcommands `keyward [PATH...] --help` lists (without `help`).
fn subcommands(kw: &Kw, path: &[&str]) -> Vec<String> {
    let mut args = path.to_vec();
    args.push("--help");
    let help = kw.run(&args).ok().stdout.clone();
    let mut names = Vec::new();
    let mut in_commands = false;
    for line in help.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if in_commands {
            if !line.starts_with("  ") {
                break;
            }
            let name = line.split_whitespace().next().unwrap();
            if name != "help" {
                names.push(name.to_string());
            }
        }
    }
    names
}

/// Every command path: `["keys"]`, `["keys", "rotate"]`, ...
fn command_paths(kw: &Kw) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    while let Some(path) = todo.pop() {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        for sub in subcommands(kw, &p) {
            let mut child = path.clone();
            child.push(sub);
            out.push(child.clone());
            todo.push(child);
        }
    }
    out.sort();
    out
}

#[test]
fn bash_completion_and_man_pages_name_every_command() {
    let kw = Kw::new();
    let paths = command_paths(&kw);
    // The tree the parser knows is the product's: a sanity floor, so an
    // empty listing (a changed help layout) cannot pass.
    for must in [
        vec!["serve"],
        vec!["gateway"],
        vec!["keys", "rotate"],
        vec!["completions"],
        vec!["man"],
    ] {
        assert!(
            paths.iter().any(|p| p == &must),
            "{must:?} not in {paths:?}"
        );
    }

    let bash = kw.run(&["completions", "bash"]).ok().stdout.clone();
    assert!(
        bash.contains("complete -F _keyward"),
        "not a bash completion"
    );
    for p in &paths {
        // clap_complete's bash script has one case arm per command path,
        // matching the typed word after its parent's state:
        // `keyward__subcmd__keys,rotate)` sets
        // `cmd="keyward__subcmd__keys__subcmd__rotate"`.
        let id = |p: &[String]| {
            p.iter().fold("keyward".to_string(), |acc, c| {
                format!("{acc}__subcmd__{}", c.replace('-', "__subcmd__"))
            })
        };
        let arm = format!("{},{})", id(&p[..p.len() - 1]), p.last().unwrap());
        assert!(bash.contains(&arm), "bash completion lacks {arm}");
        assert!(bash.contains(&format!("cmd=\"{}\"", id(p))));
        let last = p.last().unwrap();
        assert!(
            bash.split(|c: char| c.is_whitespace() || c == '"')
                .any(|w| w == last),
            "bash completion never offers {last}"
        );
    }

    let man = kw.run(&["man"]).ok().stdout.clone();
    assert!(
        man.starts_with(".ie") || man.contains(".TH keyward 1"),
        "not roff"
    );
    assert!(man.contains(".TH keyward 1"));
    for top in paths.iter().filter(|p| p.len() == 1) {
        let entry = format!("keyward\\-{}(1)", top[0].replace('-', "\\-"));
        assert!(man.contains(&entry), "keyward(1) does not list {entry}");
    }

    // One page per command path in a directory.
    let dir = kw.dir.path().join("man");
    let listed = kw
        .run(&["man", "--out", dir.to_str().unwrap()])
        .ok()
        .stdout
        .clone();
    for p in &paths {
        let file = dir.join(format!("keyward-{}.1", p.join("-")));
        assert!(file.is_file(), "no page {}", file.display());
        assert!(listed.contains(file.to_str().unwrap()));
        let page = std::fs::read_to_string(&file).unwrap();
        assert!(
            page.contains(".SH NAME"),
            "{} is not a man page",
            file.display()
        );
    }
    assert!(dir.join("keyward.1").is_file());
}

#[test]
fn every_shell_gets_a_script_and_an_unknown_one_is_refused() {
    let kw = Kw::new();
    for (shell, marker) in [
        ("bash", "complete -F _keyward"),
        ("zsh", "#compdef keyward"),
        ("fish", "complete -c keyward"),
        ("elvish", "edit:completion:arg-completer[keyward]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = kw.run(&["completions", shell]).ok().stdout.clone();
        assert!(out.contains(marker), "{shell}: no {marker:?}");
        assert!(out.contains("rotate"), "{shell}: no subcommand words");
    }
    kw.run(&["completions", "tcsh"])
        .fails_with("invalid value 'tcsh'");
    // Neither command touches a data directory.
    assert!(!kw.data_dir().exists());
}
