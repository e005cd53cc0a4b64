import Foundation
import NIOCore

/// How a `RedisClient` speaks TLS to Redis (`rediss://`, managed Redis): whom to trust, which name to
/// expect, and the client's own certificate when the server asks for one (mutual TLS).
///
/// | field | type | default | meaning |
/// | --- | --- | --- | --- |
/// | `caFile` | `String?` | `nil` | PEM file of the CA certificates that sign the server's certificate; `nil` trusts the system's roots |
/// | `certificateFile` | `String?` | `nil` | PEM file of the client's certificate (then its chain), for servers that require one |
/// | `privateKeyFile` | `String?` | `nil` | PEM file of the client certificate's private key (unencrypted); set with `certificateFile` |
/// | `serverName` | `String?` | `nil` | the name sent as SNI and verified against the server's certificate; `nil` uses the host |
///
/// The server's certificate is always verified, name included: against `serverName` when set, else
/// against the host name, or against the address when the host is an IP address (which SNI cannot carry).
/// Files are read when a client or connection is made from the configuration, not when it is validated.
public struct RedisTLSConfiguration: Sendable, Hashable {
    public var caFile: String?
    public var certificateFile: String?
    public var privateKeyFile: String?
    public var serverName: String?

    public init(caFile: String? = nil, certificateFile: String? = nil, privateKeyFile: String? = nil, serverName: String? = nil) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.privateKeyFile = privateKeyFile
        self.serverName = serverName
    }

    /// Checks the fields without reading the files; the error names the field (`tls.caFile`, …).
    func validate() throws(RedisClientError) {
        func fail(_ field: String, _ expected: String, _ found: String) -> RedisClientError {
            RedisClientError.invalidField("tls.\(field)", expected: expected, found: found)
        }
        for (field, path) in [("caFile", caFile), ("certificateFile", certificateFile), ("privateKeyFile", privateKeyFile)] {
            if path?.isEmpty == true { throw fail(field, "a file path or nil", "an empty string") }
        }
        if certificateFile != nil, privateKeyFile == nil {
            throw fail("privateKeyFile", "set when certificateFile is set (the client certificate's key)", "nil")
        }
        if privateKeyFile != nil, certificateFile == nil {
            throw fail("certificateFile", "set when privateKeyFile is set (the certificate of that key)", "nil")
        }
        if let serverName {
            let expected = "a DNS name such as redis.example.com"
            guard !serverName.isEmpty, serverName.utf8.count <= 253 else {
                throw fail("serverName", expected, serverName.isEmpty ? "an empty string" : "a name of \(serverName.utf8.count) bytes")
            }
            // SNI carries names only; an address is verified against the connection's own address.
            guard !Self.isIPAddress(serverName) else {
                throw fail("serverName", "\(expected), not an IP address (leave it unset to verify the address)", serverName)
            }
            let allowed = serverName.utf8.allSatisfy { byte in
                byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_")
                    || (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                    || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                    || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
            }
            guard allowed else { throw fail("serverName", "\(expected) (letters, digits, '-', '.')", "\"\(serverName)\"") }
        }
    }

    static func isIPAddress(_ text: String) -> Bool {
        (try? SocketAddress(ipAddress: text, port: 0)) != nil
    }

    /// Reads a file the configuration names; the error names the field and the file.
    static func contents(of path: String, field: String) throws(RedisClientError) -> [UInt8] {
        let failure = { (why: String) in fileError(field, path, why) }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw failure("does not exist") }
        guard !isDirectory.boolValue else { throw failure("is a directory, not a PEM file") }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw failure("cannot be read (check its permissions)")
        }
        return [UInt8](data)
    }

    /// The error for a file that cannot serve as `field`: it names the field and the file.
    static func fileError(_ field: String, _ path: String, _ why: String) -> RedisClientError {
        RedisClientError(.invalidConfiguration, message: "RedisConfiguration.tls.\(field) names \(path), which \(why)", field: "tls.\(field)")
    }
}

extension RedisTLSConfiguration: CustomStringConvertible {
    /// The files and the name, for logs (no secret is in them: the key file's path, never its content).
    public var description: String {
        var parts = ["trust: \(caFile ?? "system roots")"]
        if let serverName { parts.append("serverName: \(serverName)") }
        if let certificateFile { parts.append("clientCertificate: \(certificateFile)") }
        return "TLS(\(parts.joined(separator: ", ")))"
    }
}
