@rem Gradle wrapper launcher for mpk's Android benchmark app (Windows).
@rem Like the standard wrapper: finds java, runs GradleWrapperMain from gradle\wrapper\gradle-wrapper.jar.
@rem mpk does not commit gradle-wrapper.jar; if it is missing this script says how to create it.
@if "%DEBUG%"=="" @echo off
setlocal
set APP_HOME=%~dp0
set WRAPPER_JAR=%APP_HOME%gradle\wrapper\gradle-wrapper.jar
if defined JAVA_HOME (set JAVACMD=%JAVA_HOME%\bin\java.exe) else (set JAVACMD=java.exe)
"%JAVACMD%" -version >NUL 2>&1
if errorlevel 1 (
  echo gradlew: no usable java found; install JDK 17 and set JAVA_HOME. 1>&2
  exit /b 1
)
if not exist "%WRAPPER_JAR%" (
  echo gradlew: gradle\wrapper\gradle-wrapper.jar is missing. 1>&2
  echo   mpk does not commit this prebuilt jar. Create it once with a local Gradle: 1>&2
  echo       cd "%APP_HOME%" ^&^& gradle wrapper --gradle-version 8.10.2 1>&2
  echo   Opening android_app in Android Studio also generates it. 1>&2
  exit /b 1
)
"%JAVACMD%" -Xmx64m -Xms64m %JAVA_OPTS% %GRADLE_OPTS% "-Dorg.gradle.appname=gradlew" -classpath "%WRAPPER_JAR%" org.gradle.wrapper.GradleWrapperMain %*
exit /b %ERRORLEVEL%
