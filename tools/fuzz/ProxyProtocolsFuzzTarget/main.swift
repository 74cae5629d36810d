import Fuzzing

// The coverage-guided target for the SOCKS5 and HTTP CONNECT codecs the client's frontends
// read with (FuzzTargets.proxyProtocols); tools/fuzz/run-proxy-protocols runs it under libFuzzer.
FuzzDriver.run { FuzzTargets.proxyProtocols($0) }
