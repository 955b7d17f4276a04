# mssante gateway: slim, non-root, config and data as volumes.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mssante ./mssante
COPY annuaire ./annuaire
COPY pki ./pki
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/mssante --create-home mssante
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER mssante
WORKDIR /var/lib/mssante
VOLUME ["/etc/mssante", "/var/lib/mssante"]
# Production ports (see config/production.example.toml); bind below 1024 with CAP_NET_BIND_SERVICE
# or publish the unprivileged dev ports.
EXPOSE 25 465 587 143 993 2575 8080
ENTRYPOINT ["mssante"]
CMD ["--config", "/etc/mssante/mssante.toml", "serve"]
