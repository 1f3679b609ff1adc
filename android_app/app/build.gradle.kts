plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

val executorchVersion: String = providers.gradleProperty("mpk.executorchVersion").get()
val onnxruntimeVersion: String = providers.gradleProperty("mpk.onnxruntimeVersion").get()

android {
    namespace = "org.mpk.bench"
    compileSdk = 35

    defaultConfig {
        applicationId = "org.mpk.bench"
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        // `mpk bench` reads the linked runtimes from here (`dumpsys package org.mpk.bench`) before it pushes
        // anything, and refuses artifacts they cannot load (runners/compat.py parse_app_version_name).
        versionName = "0.1.0 (executorch $executorchVersion; onnxruntime $onnxruntimeVersion)"
        // The AARs ship arm64-v8a and x86_64 (emulator) native code only.
        ndk { abiFilters += listOf("arm64-v8a", "x86_64") }
        buildConfigField("String", "EXECUTORCH_VERSION", "\"$executorchVersion\"")
        buildConfigField("String", "ONNXRUNTIME_VERSION", "\"$onnxruntimeVersion\"")
    }

    buildTypes {
        release {
            // mpk reads result.json with `run-as org.mpk.bench`, which works only for debuggable apps.
            // The timed work is native (XNNPACK / ORT kernels), which debuggable does not slow down.
            isDebuggable = true
            isMinifyEnabled = false
            // Signed with the debug key so `adb install` accepts the APK without a keystore of your own.
            signingConfig = signingConfigs.getByName("debug")
        }
    }

    buildFeatures { buildConfig = true }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions { jvmTarget = "17" }

    packaging {
        // .pte/.onnx files are never bundled (mpk pushes them); keep native libs uncompressed for mmap.
        jniLibs { useLegacyPackaging = false }
    }
}

dependencies {
    implementation("org.pytorch:executorch-android:$executorchVersion")
    implementation("com.microsoft.onnxruntime:onnxruntime-android:$onnxruntimeVersion")
    // executorch-android needs fbjni/soloader at runtime; its POM declares them, listed here so a
    // version clash shows up at build time rather than as UnsatisfiedLinkError on the phone.
    implementation("com.facebook.fbjni:fbjni:0.7.0")
    implementation("com.facebook.soloader:nativeloader:0.10.5")

    testImplementation("junit:junit:4.13.2")
}
