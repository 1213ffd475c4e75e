// Log Analytics, Application Insights (Entra-only ingestion) and the gateway's workbook.
// The workbook's content is a file, so the real one replaces the placeholder without a Bicep change.
param logAnalyticsName string
param applicationInsightsName string
param location string
param tags object
param workbookDisplayName string = 'Azure OpenAI gateway'

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
    features: {
      disableLocalAuth: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    IngestionMode: 'LogAnalytics'
    // Only Entra-authenticated telemetry (the app's identity, Monitoring Metrics Publisher) is accepted.
    DisableLocalAuth: true
  }
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(appInsights.id, 'gateway-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: workbookDisplayName
    category: 'workbook'
    sourceId: appInsights.id
    serializedData: loadTextContent('../workbooks/gateway.workbook.json')
  }
}

output applicationInsightsName string = appInsights.name
output applicationInsightsId string = appInsights.id
output connectionString string = appInsights.properties.ConnectionString
output logAnalyticsId string = logAnalytics.id
output workbookId string = workbook.id
