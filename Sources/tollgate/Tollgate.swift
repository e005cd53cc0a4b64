import ArgumentParser

/// The `tollgate` command: one subcommand per task an operator runs.
@main
struct TollgateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tollgate",
        abstract: "Rate limiting and quota enforcement for the message API.",
        subcommands: [CheckCommand.self, ServeCommand.self, KeysCommand.self, UsageCommand.self, ResetCommand.self, RedisLoadCommand.self]
    )
}
