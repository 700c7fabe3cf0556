rootProject.name = "ktor-hello"
