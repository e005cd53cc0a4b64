import Foundation

/// A throwaway certificate authority made with the `openssl` CLI when a test runs, in a fresh folder:
/// the CA, a server certificate it signed for `serverNames` (DNS names only: no IP address, so that a
/// connection by address must name the server to be accepted), a client certificate it signed (for
/// mutual TLS), and a second CA that signed nothing here (the wrong CA). EC P-256, valid two days.
/// The keys protect nothing and are deleted with `remove()`.
public struct TestCertificateAuthority: Sendable {
    public let directory: String
    /// The CA that signed the server and client certificates.
    public var caFile: String { directory + "/ca.pem" }
    /// A CA unrelated to the certificates here.
    public var otherCAFile: String { directory + "/other-ca.pem" }
    public var serverCertificateFile: String { directory + "/server.pem" }
    public var serverKeyFile: String { directory + "/server.key" }
    public var clientCertificateFile: String { directory + "/client.pem" }
    public var clientKeyFile: String { directory + "/client.key" }

    /// Makes the files. Fails loudly when `openssl` is not installed.
    public static func make(serverNames: [String] = ["localhost"]) async throws -> TestCertificateAuthority {
        guard let openssl = locateExecutable("openssl") else {
            throw TestSetupError(
                description: "openssl was not found on PATH nor in /usr/bin, /usr/sbin, /usr/local/bin. "
                    + "Install it (Debian: apt-get install openssl); the TLS tests make their certificates with it.")
        }
        let directory = NSTemporaryDirectory() + "tollgate-tls-\(UInt64.random(in: 0...UInt64.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let authority = TestCertificateAuthority(directory: directory)
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        do {
            for name in ["ca", "other-ca"] {
                try await run(
                    openssl,
                    ["req", "-x509"] + ec + [
                        "-keyout", "\(directory)/\(name).key", "-out", "\(directory)/\(name).pem", "-days", "2",
                        "-subj", "/CN=Tollgate Test \(name)", "-addext", "basicConstraints=critical,CA:TRUE",
                        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                    ])
            }
            let leaves = [
                ("server", "serverAuth", serverNames.map { "DNS:\($0)" }.joined(separator: ",")),
                ("client", "clientAuth", "DNS:tollgate-client"),
            ]
            for (serial, (name, usage, subjectAltName)) in leaves.enumerated() {
                let extensions = "\(directory)/\(name).ext"
                try Data(
                    """
                    basicConstraints=CA:FALSE
                    keyUsage=critical,digitalSignature
                    extendedKeyUsage=\(usage)
                    subjectAltName=\(subjectAltName)

                    """.utf8
                ).write(to: URL(fileURLWithPath: extensions))
                try await run(
                    openssl,
                    ["req", "-new"] + ec + [
                        "-keyout", "\(directory)/\(name).key", "-out", "\(directory)/\(name).csr",
                        "-subj", "/CN=\(name == "server" ? serverNames.first ?? "server" : "tollgate-client")",
                    ])
                try await run(
                    openssl,
                    [
                        "x509", "-req", "-in", "\(directory)/\(name).csr", "-CA", authority.caFile,
                        "-CAkey", "\(directory)/ca.key", "-set_serial", "\(serial + 2)", "-days", "2",
                        "-out", "\(directory)/\(name).pem", "-extfile", extensions,
                    ])
            }
        } catch {
            authority.remove()
            throw error
        }
        return authority
    }

    /// Deletes the folder and everything in it.
    public func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Runs `executable` to its end; throws with its output when it fails.
    private static func run(_ executable: String, _ arguments: [String]) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let output = Pipe()
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        process.standardError = output
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do {
                try process.run()
            } catch {
                process.terminationHandler = nil
                continuation.resume(throwing: error)
            }
        }
        guard status == 0 else {
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            throw TestSetupError(description: "\(executable) \(arguments.joined(separator: " ")) exited with \(status):\n\(text)")
        }
    }
}
