package com.example

import io.ktor.client.request.*
import io.ktor.http.*
import io.ktor.server.testing.*
import kotlin.test.Test
import kotlin.test.assertEquals

class ApplicationTest {
    @Test
    fun healthz() = testApplication {
        application { module() }
        assertEquals(HttpStatusCode.OK, client.get("/healthz").status)
    }
}
