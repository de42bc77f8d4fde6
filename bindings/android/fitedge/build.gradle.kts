// The FitEdge Android library: the generated Kotlin bindings (src/main/kotlin, from
// scripts/bindings) and the Rust library for each ABI (src/main/jniLibs, from build-rust.sh).
plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "dev.fitedge"
    compileSdk = 35
    defaultConfig {
        minSdk = 26
        consumerProguardFiles("consumer-rules.pro")
    }
    sourceSets["main"].jniLibs.srcDirs("src/main/jniLibs")
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin { jvmToolchain(17) }

dependencies {
    // UniFFI's Kotlin bindings call the Rust library through JNA (the Android AAR).
    implementation("net.java.dev.jna:jna:5.13.0@aar")
    implementation("androidx.annotation:annotation:1.9.1")
}

// Build the Rust library for every ABI before packaging: ./build-rust.sh
tasks.register<Exec>("buildRust") {
    workingDir = rootDir
    commandLine("./build-rust.sh")
}
