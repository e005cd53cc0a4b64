import ArgumentParser
import Foundation
import NIOCore
#if canImport(Glibc)
import Glibc
#endif
import Logging
import Tollgate
import TollgateSidecar

/// `tollgate serve --config FILE`: runs the sidecar proxy in front of the message API.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the sidecar proxy: authenticate API keys, apply plan limits, forward what passes.",
        discussion: """
            Reads the plans and the server, upstream, store, keys, routes, unmatched and tracing sections of the \
            configuration file. An invalid file is refused before anything starts, naming the file, line and \
            field (exit status 1). SIGHUP, or a change of the configuration or key file (server.watch_files), \
            reloads them without losing counters \
            (an invalid new file is refused and the old one stays in force); SIGTERM or SIGINT stops accepting \
            connections, lets requests in flight finish and exits. Logs go to standard error.
            """
    )

    @Option(name: .long, help: ArgumentHelp("The configuration file.", valueName: "file"))
    var config: String = "Config/tollgate.yaml"

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = ProcessInfo.processInfo.environment["LOG_LEVEL"] ?? "info"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
    }

    func run() async throws {
        // A supervisor (or a test runner) may start us with signals blocked, which the child inherits:
        // unblock the ones we act on, so that SIGTERM stops and SIGHUP reloads whoever started us.
        var signals = sigset_t()
        sigemptyset(&signals)
        for signal in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&signals, signal) }
        pthread_sigmask(SIG_UNBLOCK, &signals, nil)

        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in StandardErrorLogHandler(label: label, level: level) }
        let logger = Logger(label: "tollgate.sidecar")
        let sidecar: Sidecar
        do {
            // The event-loop threads are set once, before anything starts one (`server.threads`).
            if let threads = try TollgateConfiguration.load(contentsOfFile: config).sidecar.server.threads {
                NIOSingletons.groupLoopCountSuggestion = threads
            }
            sidecar = try Sidecar(configurationFile: config, logger: logger)
        } catch {
            FileHandle.standardError.write(Data("\(error.description)\n".utf8))
            throw ExitCode(1)
        }
        try await sidecar.run(gracefulShutdownSignals: [.sigterm, .sigint], reloadOnHangup: true)
    }
}
