// swift-tools-version:5.9
// FitEdge for iOS and watchOS: the Swift API generated from ffi/ (Sources/FitEdge) over the Rust
// library packaged as an XCFramework (build-xcframework.sh -> FitEdgeFFI.xcframework).
import PackageDescription

let package = Package(
    name: "FitEdge",
    platforms: [.iOS(.v15), .watchOS(.v8), .macOS(.v12)],
    products: [.library(name: "FitEdge", targets: ["FitEdge"])],
    targets: [
        .binaryTarget(name: "FitEdgeFFI", path: "FitEdgeFFI.xcframework"),
        .target(name: "FitEdge", dependencies: ["FitEdgeFFI"], path: "Sources/FitEdge"),
    ]
)
