//! Generated documentation that is committed: ferricorn(1), ferricorn.toml(5)
//! and the shell completions, all derived from the command-line definition.
//! The tests fail when a committed file is stale; regenerate with
//! `UPDATE_GENERATED=1 cargo test --bin ferricorn generated`.

#[cfg(test)]
mod tests {
    use crate::config::{Cli, SETTING_NAMES};
    use clap::CommandFactory;
    use std::path::Path;

    fn check_or_update(rel: &str, content: &[u8]) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        if std::env::var_os("UPDATE_GENERATED").is_some() {
            std::fs::write(&path, content).unwrap();
            return;
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == content,
            "{rel} is stale: run `UPDATE_GENERATED=1 cargo test --bin ferricorn generated` and commit it"
        );
    }

    #[test]
    fn generated_man_page_is_current() {
        let mut out = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .section("1")
            .manual("ferricorn manual")
            .render(&mut out)
            .unwrap();
        check_or_update("man/ferricorn.1", &out);
    }

    #[test]
    fn generated_completions_are_current() {
        use clap_complete::Shell;
        for (shell, file) in [
            (Shell::Bash, "completions/ferricorn.bash"),
            (Shell::Zsh, "completions/_ferricorn"),
            (Shell::Fish, "completions/ferricorn.fish"),
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "ferricorn", &mut out);
            check_or_update(file, &out);
        }
    }

    fn roff_escape(s: &str) -> String {
        s.replace('\\', "\\\\")
            .replace('-', "\\-")
            .replace('\'', "\\(aq")
    }

    /// ferricorn.toml(5): every setting, with its flags and default, from the
    /// same definitions the parser uses.
    #[test]
    fn generated_config_page_is_current() {
        let cmd = Cli::command();
        let mut page = String::new();
        page.push_str(".TH FERRICORN.TOML 5 \"\" \"ferricorn\" \"ferricorn manual\"\n");
        page.push_str(".SH NAME\nferricorn.toml \\- ferricorn configuration file\n");
        page.push_str(".SH SYNOPSIS\n\\fB/etc/ferricorn/\\fR\\fINAME\\fR\\fB.toml\\fR, or any file given with \\fB\\-c\\fR\n");
        page.push_str(".SH DESCRIPTION\nA TOML file whose keys are gunicorn's setting names (plus \\fBapp\\fR). \
Settings are layered: defaults < this file < \\fB$FERRICORN_CMD_ARGS\\fR < command line; \
\\fBferricorn \\-\\-print\\-config\\fR shows the result and where each value came from. \
An unknown key or a wrong value is refused before anything is bound, naming the setting.\n");
        page.push_str(".PP\nA gunicorn configuration file (\\fI*.py\\fR) is accepted too: its plain settings are read \
by a short\\-lived embedded interpreter; server hooks it defines are named in a warning and do not run.\n");
        page.push_str(".SH EXAMPLE\n.EX\napp = \"myproject.wsgi:application\"\nchdir = \"/srv/myproject\"\n\
virtualenv = \"/srv/myproject/.venv\"\nworkers = 4\nworker_class = \"gthread\"\nthreads = 8\naccesslog = \"\\-\"\n.EE\n");
        page.push_str(".SH SETTINGS\n");
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if !SETTING_NAMES.contains(&id) {
                continue;
            }
            let value = arg
                .get_value_names()
                .and_then(|v| v.first().map(|s| s.to_string()))
                .unwrap_or_else(|| "BOOL".into());
            let mut flags = Vec::new();
            if let Some(s) = arg.get_short() {
                flags.push(format!("\\fB\\-{s}\\fR"));
            }
            if let Some(l) = arg.get_long() {
                flags.push(format!("\\fB\\-\\-{}\\fR", roff_escape(l)));
            }
            let flags = if flags.is_empty() {
                "the APP_MODULE argument".to_string()
            } else {
                flags.join(", ")
            };
            let help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            page.push_str(&format!(
                ".TP\n\\fB{}\\fR = \\fI{}\\fR\n{}\n.br\nCommand line: {}.\n",
                roff_escape(id),
                roff_escape(&value),
                roff_escape(&help.replace('\n', " ")),
                flags
            ));
        }
        page.push_str(".SH ENVIRONMENT\n.TP\n\\fBWEB_CONCURRENCY\\fR\nDefault for \\fBworkers\\fR.\n\
.TP\n\\fBPORT\\fR\nWhen set, the default \\fBbind\\fR is 0.0.0.0:$PORT.\n\
.TP\n\\fBVIRTUAL_ENV\\fR\nDefault for \\fBvirtualenv\\fR.\n\
.TP\n\\fBFERRICORN_CMD_ARGS\\fR\nExtra command\\-line arguments, above the file and below the real command line.\n");
        page.push_str(".SH SEE ALSO\n\\fBferricorn\\fR(1), \\fBferricorn\\-deploy\\fR(7)\n");
        check_or_update("man/ferricorn.toml.5", page.as_bytes());
    }

    #[test]
    fn every_setting_is_documented_in_the_config_page() {
        let page = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("man/ferricorn.toml.5"),
        )
        .unwrap();
        for name in SETTING_NAMES {
            assert!(
                page.contains(&format!(".TP\n\\fB{}\\fR", roff_escape(name))),
                "{name} is not in ferricorn.toml(5)"
            );
        }
    }
}
