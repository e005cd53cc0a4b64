import ArgumentParser
import Foundation
import Tollgate

/// `tollgate check CONFIG`: validates a configuration file and shows the plans it defines, so that a
/// change can be checked before it is deployed.
struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate a configuration file and print its plans.",
        discussion: """
            Prints one row per limit and a summary line. When the file is invalid, prints the file, line, \
            field and what was expected to standard error and exits with status 1.
            """
    )

    @Argument(help: ArgumentHelp("The configuration file to check.", valueName: "config"))
    var config: String

    func run() async throws {
        let configuration: TollgateConfiguration
        do {
            configuration = try TollgateConfiguration.load(contentsOfFile: config)
        } catch {
            FileHandle.standardError.write(Data("\(error.description)\n".utf8))
            throw ExitCode(1)
        }
        print(PlanTable.render(configuration))
    }
}
