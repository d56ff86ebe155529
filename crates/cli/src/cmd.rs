//! One module per command group; [`run`] dispatches.

mod api_token;
pub mod connect;
mod env;
mod follow;
pub mod forward;
mod init;
mod ip;
mod man;
mod node;
mod ops;
mod serve;
mod ssh;
mod task;
mod token;
mod ui;
mod user;
mod vps;

use crate::args::{Cli, Command};
use crate::client::config_dir;
use std::process::ExitCode;

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let dir = config_dir(cli.config_dir.as_deref());
    match cli.command {
        Command::Host(a) => serve::host(a).await,
        Command::Runner(a) => serve::runner(a).await,
        Command::Up(a) => serve::up(a, &dir).await,
        Command::Down(a) => serve::down(a),
        Command::Status => node::status(&dir, cli.output).await,
        Command::Whoami => user::whoami(&dir, cli.output).await,
        Command::Node(c) => node::run(c, &dir, cli.output).await,
        Command::Token(c) => token::run(c, &dir, cli.output).await,
        Command::User(c) => user::run(c, &dir, cli.output).await,
        Command::Audit { user, since, limit } => user::audit(&dir, user, since, limit, cli.output).await,
        Command::Task(c) => return task::run(c, &dir, cli.output).await,
        Command::Env(c) => env::run(c, &dir, cli.output).await,
        Command::Ip(c) => ip::run(c, &dir, cli.output).await,
        Command::Vps(c) => vps::run(c, &dir, cli.output).await,
        Command::Forward {
            id,
            port,
            local,
            bind,
            udp,
        } => forward::run(&dir, id, port, local, bind, udp).await,
        Command::Ssh { id, user, port, args } => return ssh::ssh(cli.config_dir.as_deref(), &id, &user, port, args),
        Command::SshProxy { id, port } => ssh::proxy(&dir, &id, port).await,
        Command::SshConfig { user } => ssh::config(cli.config_dir.as_deref(), &user),
        Command::Connect { id, command } => {
            let code = connect::terminal(&dir, id, command).await?;
            return Ok(ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)));
        }
        Command::Ui(a) => ui::command(a, &dir, cli.output).await,
        Command::Login(a) => user::login(a, &dir).await,
        Command::Logout { local } => user::logout(&dir, local).await,
        Command::Init(c) => init::run(c),
        Command::Man { command, dir } => man::run(&command, dir.as_deref()),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "river", &mut std::io::stdout());
            Ok(())
        }
    }?;
    Ok(ExitCode::SUCCESS)
}
