"""Auth manager extensions: the platform's access rules enforced by Airflow itself."""
